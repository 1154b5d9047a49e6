// quarot — transforms module: fast Walsh-Hadamard (natural and sequency order),
// Hadamard matrices of non-power-of-two order, Kronecker Hadamard transforms for any
// supported n, randomized Hadamard, grouped (GSR) and dense orthogonal rotations, and
// fusing rotations into weights.
#pragma once

#include "core.hpp"
#include "transform/dense_orthogonal.hpp"
#include "transform/fuse.hpp"
#include "transform/grouped.hpp"
#include "transform/hadamard_matrices.hpp"
#include "transform/kronecker.hpp"
#include "transform/walsh_hadamard.hpp"
