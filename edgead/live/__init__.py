"""Live inspection: sources and outputs named by URI, GStreamer pipelines, the inspection loop, alerts."""
