// Symbol visibility for libmq. The library is built with hidden visibility; only what is marked
// MQ_EXPORT is part of the shared-library ABI.
#pragma once

#if defined(MQ_SHARED_LIBRARY) && defined(MQ_COMPILING_LIBRARY)
#define MQ_EXPORT __attribute__((visibility("default")))
#else
#define MQ_EXPORT
#endif
