"""App Mesh's REST-JSON API with SigV4, served in front of the admin API's resource layer."""
