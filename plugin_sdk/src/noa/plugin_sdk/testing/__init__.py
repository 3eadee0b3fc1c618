"""The NOA test kit: boot a kernel in-process, contract suites per driver slot, reference fakes.

Needs ``pip install noa-plugin-sdk[testing]`` (it boots the real kernel).
"""

from noa.plugin_sdk.testing.harness import KernelUnderTest, boot

__all__ = ["KernelUnderTest", "boot"]
