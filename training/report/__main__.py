"""`python -m training.report CHECK --model M ...`: one diagnostic of a model dir on its own."""
import sys

from training.report.run import main

sys.exit(main())
