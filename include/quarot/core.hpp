// quarot — core module: configuration, errors, backend tags, 16-bit storage types,
// matrix views, the thread pool, the portable PRNG, int4 packing and the concepts.
#pragma once

#include "core/backend.hpp"
#include "core/concepts.hpp"
#include "core/config.hpp"
#include "core/error.hpp"
#include "core/int4.hpp"
#include "core/matrix_view.hpp"
#include "core/numeric.hpp"
#include "core/random.hpp"
#include "core/thread_pool.hpp"
