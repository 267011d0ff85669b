"""Real components that tests start on loopback (an RTSP server, ...)."""
