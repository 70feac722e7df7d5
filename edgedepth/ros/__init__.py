"""ROS 2 integration: REP 118 depth from bags without a ROS install (``bag``, needs ``rosbags``) and a
live node for rclpy users (``node``); ``messages`` converts between message contents and numpy."""
