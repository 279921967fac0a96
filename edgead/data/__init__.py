"""Data: MVTec-style folders, the single preprocessing definition, synthetic demo data."""
