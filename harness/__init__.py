"""kdump-hotplug harness: hot-plug swarms, panics and vmcores under QEMU.

Everything is checked against the topology.
"""

__version__ = "0.1.0"
