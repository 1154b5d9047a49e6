// quarot — model pipeline module: a Llama-family decoder and BERT encoders (GGUF / Hugging Face loading,
// reference fp32 forward pass, perplexity), its byte-level BPE tokenizer, the QuaRot
// transformation as composable steps, weight (RTN/GPTQ), activation and KV-cache
// quantization, integer-kernel execution, and the quarot-llama/1 save format.
#pragma once

#include "model/bert.hpp"
#include "model/format.hpp"
#include "model/llama.hpp"
#include "model/quantize.hpp"
#include "model/rotate.hpp"
#include "model/tokenizer.hpp"
