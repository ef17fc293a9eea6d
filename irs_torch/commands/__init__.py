"""Sub-commands of ``irs-torch``; each module defines ``register(subparsers)``."""
