"""pyspu IKE control plane (IKEv2/IKEv1), sans-I/O core."""
