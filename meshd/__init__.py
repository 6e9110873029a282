"""meshd: a service mesh that keeps AWS App Mesh's resource model and API."""
