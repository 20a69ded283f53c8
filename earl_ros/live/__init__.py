"""ROS-free live-session logic the node wires to ROS (ARCHITECTURE.md: cli -> ros -> live -> model)."""
