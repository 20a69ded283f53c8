"""earl_ros: EARL egocentric interaction grounding as a ROS 2 perception stack."""
__version__ = "0.1.0"
