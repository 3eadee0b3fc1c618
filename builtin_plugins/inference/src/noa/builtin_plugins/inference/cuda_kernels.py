"""CUDA C sources of the ``cuda`` device driver, compiled at run time by NVRTC.

Kept apart from :mod:`.cuda_device` as :mod:`.cpu_kernels` is from :mod:`.cpu_device`:
the driver is the Python side (memory, launches, checks), this is what runs on the GPU.
"""

from __future__ import annotations

__all__ = ["KERNELS"]

#: The kernels, as CUDA C compiled at run time by NVRTC. Arrays are row-major float32
#: (int32 for token ids, positions, offsets and lengths) and contiguous.
KERNELS = r"""
#define NOA_MAX_FLOAT 3.402823466e+38f

// Sum and maximum over a block; every thread gets the result. ``scratch`` holds
// blockDim.x floats and blockDim.x is a power of two. Every thread of the block must call.
__device__ float noa_block_sum(float value, float* scratch) {
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) scratch[threadIdx.x] += scratch[threadIdx.x + half];
        __syncthreads();
    }
    float total = scratch[0];
    __syncthreads();  // before anyone reuses scratch
    return total;
}

__device__ float noa_block_max(float value, float* scratch) {
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (unsigned int half = blockDim.x / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
            scratch[threadIdx.x] = fmaxf(scratch[threadIdx.x], scratch[threadIdx.x + half]);
        }
        __syncthreads();
    }
    float top = scratch[0];
    __syncthreads();
    return top;
}

// Layer norm of one row held in shared memory (biased variance, two passes), written to
// ``out``. ``partial`` is this thread's share of the row's sum; each thread reads back
// only the elements it wrote, so ``row`` needs no barrier before this.
__device__ void noa_normalize_row(const float* row, float partial, int cols,
                                  const float* weight, const float* beta, float eps,
                                  float* scratch, float* out) {
    const float mean = noa_block_sum(partial, scratch) / (float)cols;
    float square = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float d = row[j] - mean;
        square += d * d;
    }
    const float inv = 1.0f / sqrtf(noa_block_sum(square, scratch) / (float)cols + eps);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        out[j] = (row[j] - mean) * inv * weight[j] + beta[j];
    }
}

// x[r, j] += bias[j], over ``size`` elements.
extern "C" __global__ void noa_add_bias(float* x, const float* bias, long long size, int cols) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        x[i] += bias[i % cols];
    }
}

// x = gelu(x + bias), the exact GELU: v * Phi(v) = v / 2 * (1 + erf(v / sqrt(2))).
extern "C" __global__ void noa_bias_gelu(float* x, const float* bias, long long size, int cols) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < size;
         i += (long long)gridDim.x * blockDim.x) {
        const float v = x[i] + bias[i % cols];
        x[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    }
}

// out = LN(x + bias + residual) * weight + beta; one block per row. Shared memory: the
// row (cols floats), then blockDim.x floats of scratch. ``out`` may be ``residual``: a
// block reads its residual row before its first barrier and writes ``out`` after it.
extern "C" __global__ void noa_bias_residual_layer_norm(
        const float* x, const float* bias, const float* residual, const float* weight,
        const float* beta, float eps, float* out, int cols) {
    extern __shared__ float shared[];
    float* row = shared;
    float* scratch = shared + cols;
    const long long base = (long long)blockIdx.x * cols;
    float partial = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = x[base + j] + bias[j] + residual[base + j];
        row[j] = v;
        partial += v;
    }
    noa_normalize_row(row, partial, cols, weight, beta, eps, scratch, out + base);
}

// out[t] = LN(word[ids[t]] + position[positions[t]] + token_type); one block per token,
// shared memory as in noa_bias_residual_layer_norm.
extern "C" __global__ void noa_embed(
        const int* ids, const int* positions, const float* word, const float* position,
        const float* token_type, const float* weight, const float* beta, float eps,
        float* out, int cols) {
    extern __shared__ float shared[];
    float* row = shared;
    float* scratch = shared + cols;
    const float* w = word + (long long)ids[blockIdx.x] * cols;
    const float* p = position + (long long)positions[blockIdx.x] * cols;
    float partial = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = w[j] + p[j] + token_type[j];
        row[j] = v;
        partial += v;
    }
    noa_normalize_row(row, partial, cols, weight, beta, eps, scratch,
                      out + (long long)blockIdx.x * cols);
}

// Stable softmax of each row in place; one block per row, blockDim.x floats of scratch.
extern "C" __global__ void noa_softmax_rows(float* x, int cols) {
    extern __shared__ float shared[];
    float* row = x + (long long)blockIdx.x * cols;
    float top = -NOA_MAX_FLOAT;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) top = fmaxf(top, row[j]);
    top = noa_block_max(top, shared);
    float partial = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        const float e = expf(row[j] - top);
        row[j] = e;
        partial += e;
    }
    const float inv = 1.0f / noa_block_sum(partial, shared);
    for (int j = threadIdx.x; j < cols; j += blockDim.x) row[j] *= inv;
}

// Self-attention over packed sequences. qkv is (tokens, 3 * width): scaled queries, keys,
// values; out is (tokens, width). Grid (longest, heads, sequences): block (i, h, s) is
// query i of sequence s in head h; blocks past a sequence's end return at once. Shared
// memory: the query (head_width), its scores (gridDim.x), scratch (blockDim.x).
extern "C" __global__ void noa_attention(
        const float* qkv, const int* offsets, const int* lengths, int heads, int head_width,
        float* out) {
    const int n = lengths[blockIdx.z];
    const int query = blockIdx.x;
    if (query >= n) return;  // the whole block leaves together, before any barrier
    extern __shared__ float shared[];
    float* q = shared;
    float* scores = shared + head_width;
    float* scratch = scores + gridDim.x;
    const int width = heads * head_width;
    const long long ld = 3LL * width;
    const long long start = offsets[blockIdx.z];
    const int head = blockIdx.y * head_width;
    const float* tokens = qkv + start * ld;

    for (int d = threadIdx.x; d < head_width; d += blockDim.x) {
        q[d] = tokens[query * ld + head + d];
    }
    __syncthreads();
    float top = -NOA_MAX_FLOAT;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float* key = tokens + j * ld + width + head;
        float s = 0.0f;
        for (int d = 0; d < head_width; ++d) s += q[d] * key[d];
        scores[j] = s;
        top = fmaxf(top, s);
    }
    top = noa_block_max(top, scratch);
    float partial = 0.0f;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const float e = expf(scores[j] - top);
        scores[j] = e;
        partial += e;
    }
    // The sum's barriers also publish every thread's scores to the loop below.
    const float inv = 1.0f / noa_block_sum(partial, scratch);
    float* dst = out + (start + query) * width + head;
    for (int d = threadIdx.x; d < head_width; d += blockDim.x) {
        const float* value = tokens + 2 * width + head + d;
        float acc = 0.0f;
        for (int j = 0; j < n; ++j) acc += scores[j] * value[j * ld];
        dst[d] = acc * inv;
    }
}

// out[s] = mean of sequence s's rows of hidden, scaled to unit L2 norm when ``normalize``;
// one block per sequence, blockDim.x floats of scratch.
extern "C" __global__ void noa_mean_pool(
        const float* hidden, const int* offsets, const int* lengths, int normalize,
        int cols, float* out) {
    extern __shared__ float shared[];
    const int n = lengths[blockIdx.x];
    const float* rows = hidden + (long long)offsets[blockIdx.x] * cols;
    float* dst = out + (long long)blockIdx.x * cols;
    const float scale = 1.0f / (float)(n > 1 ? n : 1);
    float square = 0.0f;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        float acc = 0.0f;
        for (int t = 0; t < n; ++t) acc += rows[(long long)t * cols + j];
        acc *= scale;
        dst[j] = acc;
        square += acc * acc;
    }
    if (normalize) {  // the same for the whole block, so every thread reaches the barriers
        const float inv = 1.0f / fmaxf(sqrtf(noa_block_sum(square, shared)), 1e-12f);
        for (int j = threadIdx.x; j < cols; j += blockDim.x) dst[j] *= inv;
    }
}
"""
