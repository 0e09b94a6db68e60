"""The Array API implementations: complete on every backend, with no fast paths inside.

Each function takes validated arguments in the compute dtype and the
namespace ``xp``; the public functions validate, try a backend's fast path
and fall back to these.
"""
