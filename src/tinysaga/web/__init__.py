"""The web storefront, served through the gateway at `/`."""
