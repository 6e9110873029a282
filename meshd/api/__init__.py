"""The admin API: validation, resource kinds, and the gRPC servicer."""
