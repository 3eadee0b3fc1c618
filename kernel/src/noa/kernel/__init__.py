"""The NOA microkernel: hook specifications, plugin and driver loading, layered config,
lifecycle and the ``noa`` command. It holds no feature code: every feature is a plugin.
"""

from noa.kernel.config import BootOptions, Config
from noa.kernel.runtime import Kernel

__all__ = ["BootOptions", "Config", "Kernel"]
