"""Segfaults in native code: the grader must survive and say so."""

import ctypes

TARGET = "1.3"
EXPECT = "SIGSEGV"


def decode_attention(q, keys, values, scale):
    return ctypes.string_at(0)  # reads address 0
