# Every target runs with DDS confined to this machine and a per-run domain id.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= $(shell echo $$(( ($$RANDOM % 100) + 1 )))
export AMENT_PREFIX_PATH := $(CURDIR)/$(VENV)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export FASTDDS_DEFAULT_PROFILES_FILE := $(CURDIR)/config/fastdds_shm.xml
export PYTHONUNBUFFERED := 1

.PHONY: setup test demo bench export clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(VENV)/bin/earl-demo --out out/demo

bench: setup
	$(PY) bench/mask_decoder.py
	$(PY) bench/ros_pipeline.py
	$(PY) bench/train_step.py
	$(PY) bench/sft_step.py
	$(PY) bench/query_priority.py
	$(PY) bench/ask_stream.py
	$(PY) bench/tracking_rate.py
	$(PY) bench/tracking.py --clips 90 --seed0 8000 --out bench/results/tracking_val.md
	$(PY) bench/tracking.py --clips 60 --seed0 9500
	$(PY) bench/tracking_replay.py --clips 90 --seed0 8000

clean:
	rm -rf build out .pytest_cache
