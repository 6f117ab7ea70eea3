"""Guest images: base images fetched into a local cache, and cloud-init NoCloud seed ISOs."""
