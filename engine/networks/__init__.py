"""Networks as engine objects: records, the pre-defined networks, IPAM pools and driver calls."""
