"""Building blocks of the network fault: iptables chains, tc shaping trees, mechanism probes."""
