# SPDX-License-Identifier: MIT
#
# Cross-building weft for AArch64 Linux on an x86-64 Debian machine, with the
# tests run under QEMU's user-mode emulator (the aarch64 preset; make
# cross-test). Debian packages: gcc-aarch64-linux-gnu, qemu-user.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_ASM_COMPILER aarch64-linux-gnu-gcc)
set(WEFT_AARCH64_SYSROOT /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH ${WEFT_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# ctest runs each test binary through this (add_test with a target name).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L ${WEFT_AARCH64_SYSROOT})
