#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <quarot/quantize.hpp>

using namespace quarot;
