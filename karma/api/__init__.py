"""The HTTP API of Karma (`karma api`, `karma service`, `karma dev`)."""
