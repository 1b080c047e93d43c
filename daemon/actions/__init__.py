"""Actions a rule can take, the registry that finds them by YAML name, and the runner.

The provider registry (`daemon/registry.py`) assembles the registry: the built-in
actions, the server actions with each provider's backend, and the providers' own actions.
"""
