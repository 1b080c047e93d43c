"""The embedded cloud: Seeweb ECS, Seeweb Serverless GPU and Glesys APIs on aiohttp."""
