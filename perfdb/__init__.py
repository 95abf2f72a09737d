"""perfdb: measured GPU kernel latencies with honest interpolation and roofline fallback."""
