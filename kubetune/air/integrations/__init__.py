"""``ray.air.integrations`` -> ``kubetune.air.integrations``: MLflow and Weights & Biases.

Each module imports its library only when used and says which extra installs it.
"""
