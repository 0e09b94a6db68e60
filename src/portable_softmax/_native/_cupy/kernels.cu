// The fused kernels of portable_softmax's CuPy backend: softmax, log_softmax,
// logsumexp and cross-entropy over rows.  _kernels.py describes the algorithm
// and compiles this file once per process with NVRTC.

// float rows accumulate in float: a float64 exp per entry would make the
// kernel compute-bound on GPUs with 1/32- or 1/64-rate float64, and a row sum
// goes through only n / G + 5 + G / 32 additions on its longest path (the
// NumPy model of this code in tests/test_cupy_kernels.py errs by 1.8e-7
// relative at n = 32000; torch's float32 softmax by 2e-6).

template <typename T> __device__ __forceinline__ T neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() {
    return __int_as_float(0xff800000);
}
template <> __device__ __forceinline__ double neg_inf<double>() {
    return __longlong_as_double(0xfff0000000000000LL);
}
__device__ __forceinline__ float exp_(float a) { return expf(a); }
__device__ __forceinline__ double exp_(double a) { return exp(a); }
__device__ __forceinline__ float log1p_(float a) { return log1pf(a); }
__device__ __forceinline__ double log1p_(double a) { return log1p(a); }

// x - m, with a tie giving 0: +inf - +inf (or -inf - -inf) would be NaN.
template <typename T> __device__ __forceinline__ T shift(T x, T m) {
    return x == m ? T(0) : x - m;
}

template <typename T> struct State {
    T m;  // largest entry seen (-inf before any)
    T t;  // sum of exp(x - m) over the entries seen, one maximal entry left out
};

template <typename T> __device__ __forceinline__ void push(State<T>& s, T x) {
    // x > m excludes equal infinities, so m - x is never inf - inf.  A NaN
    // x fails both x > m and x == m: exp(NaN) makes t NaN, and NaN stays.
    if (x > s.m) {
        s.t = (s.t + T(1)) * exp_(s.m - x);
        s.m = x;
    } else {
        s.t += exp_(shift(x, s.m));
    }
}

template <typename T> __device__ __forceinline__ State<T> merge(State<T> a, State<T> b) {
    // Symmetric in a and b, to the last bit: every lane of a butterfly ends
    // with the same state.
    if (a.m == b.m) {
        return State<T>{a.m, (a.t + b.t) + T(1)};
    }
    if (a.m < b.m) {
        const State<T> c = a;
        a = b;
        b = c;
    }
    return State<T>{a.m, a.t + (b.t + T(1)) * exp_(b.m - a.m)};
}

// The state of the whole row, in every thread of its group.  G == 32: one
// warp per row; otherwise G == blockDim.x, one row per block.
template <typename T, int G>
__device__ __forceinline__ State<T> row_state(const T* __restrict__ xr, long long n, int lane) {
    State<T> s = {neg_inf<T>(), T(0)};
    // Four loads in flight before their pushes (which depend on each
    // other): the same order of pushes as the plain strided loop.
    constexpr int U = 4;
    long long j = lane;
    for (; j + (U - 1) * G < n; j += U * G) {
        T v[U];
#pragma unroll
        for (int u = 0; u < U; ++u) v[u] = xr[j + u * G];
#pragma unroll
        for (int u = 0; u < U; ++u) push(s, v[u]);
    }
    for (; j < n; j += G) push(s, xr[j]);

    for (int offset = 16; offset > 0; offset >>= 1) {
        const State<T> other = {__shfl_xor_sync(0xffffffffu, s.m, offset),
                                __shfl_xor_sync(0xffffffffu, s.t, offset)};
        s = merge(s, other);
    }
    if (G > 32) {
        __shared__ State<T> warps[G / 32 > 0 ? G / 32 : 1];
        if (lane % 32 == 0) warps[lane / 32] = s;
        __syncthreads();
        // Every thread merges the warps in the same order: no broadcast step.
        s = warps[0];
        for (int w = 1; w < G / 32; ++w) s = merge(s, warps[w]);
    }
    return s;
}

template <typename T, int G>
__device__ __forceinline__ T row_sum(T v, int lane) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    if (G > 32) {
        __shared__ T warps[G / 32 > 0 ? G / 32 : 1];
        if (lane % 32 == 0) warps[lane / 32] = v;
        __syncthreads();
        v = warps[0];
        for (int w = 1; w < G / 32; ++w) v += warps[w];
    }
    return v;
}

// What the write pass needs: x_j - m = shift(x_j, m), z = 1 + T, log z.
template <typename T> struct Norm {
    T m, z, log_z;
};

template <typename T> __device__ __forceinline__ Norm<T> normalizer(State<T> s) {
    if (s.m == neg_inf<T>() && !isnan(s.t)) {
        // All entries -inf: shifting by +inf makes each one -inf.
        s.m = -neg_inf<T>();
        s.t = T(0);
    }
    return Norm<T>{s.m, T(1) + s.t, log1p_(s.t)};
}

template <int G> __device__ __forceinline__ long long row_index(int& lane) {
    lane = threadIdx.x % G;
    return (long long)blockIdx.x * (blockDim.x / G) + threadIdx.x / G;
}

template <typename T, int G, bool LOG>
__global__ void __launch_bounds__(256)
ps_normalize_rows(const T* __restrict__ x, T* __restrict__ out, long long rows, long long n) {
    int lane;
    const long long row = row_index<G>(lane);
    if (row >= rows) return;  // whole warps only: a block-row always exists
    const T* xr = x + row * n;
    T* outr = out + row * n;
    const Norm<T> r = normalizer(row_state<T, G>(xr, n, lane));
    for (long long j = lane; j < n; j += G) {
        const T d = shift(xr[j], r.m);
        outr[j] = LOG ? d - r.log_z : exp_(d) / r.z;
    }
}

template <typename T, int G>
__global__ void __launch_bounds__(256)
ps_logsumexp_rows(const T* __restrict__ x, T* __restrict__ out, long long rows, long long n) {
    int lane;
    const long long row = row_index<G>(lane);
    if (row >= rows) return;
    const State<T> s = row_state<T, G>(x + row * n, n, lane);
    // m = -inf gives -inf, m = +inf gives +inf, a NaN t gives NaN.
    if (lane == 0) out[row] = s.m + log1p_(s.t);
}

// Class-index cross-entropy (torch semantics) and its gradient; see
// cross_entropy_rows in _cupy.py for the formulas and the arguments.
template <typename T, int G>
__global__ void __launch_bounds__(256)
ps_cross_entropy_rows(const T* __restrict__ x, const long long* __restrict__ y,
                      const T* __restrict__ w_y, const bool* __restrict__ counted,
                      const T* __restrict__ weight, const T* __restrict__ w_all,
                      T factor_value, const T* __restrict__ factor, long long factor_stride,
                      int smooth, T keep, T eps_c, long long rows, long long n,
                      T* __restrict__ loss, T* __restrict__ grad) {
    int lane;
    const long long row = row_index<G>(lane);
    if (row >= rows) return;
    const T* xr = x + row * n;
    const Norm<T> r = normalizer(row_state<T, G>(xr, n, lane));

    const long long yr = y[row];
    const bool cnt = counted == nullptr || counted[row];
    const T wy = w_y != nullptr ? w_y[row] : !cnt ? T(0) : weight != nullptr ? weight[yr] : T(1);
    const T f = factor != nullptr ? factor[row * factor_stride] : factor_value;
    const T wall = weight != nullptr ? *w_all : T(n);
    const T c = cnt ? T(1) : T(0);

    T u = T(0);  // sum_j w_j (x_j - m), for the smoothing term of the loss
    if (grad != nullptr || (loss != nullptr && smooth)) {
        const T scale = (keep * wy + eps_c * wall * c) * f;
        const T target = keep * f * wy;
        const T per_class = eps_c * f;
        T* gr = grad != nullptr ? grad + row * n : nullptr;
        for (long long j = lane; j < n; j += G) {
            const T d = shift(xr[j], r.m);
            const T wj = weight != nullptr ? weight[j] : T(1);
            // A zero weight hides a -inf log-probability (0 * inf is NaN).
            if (smooth) u += wj == T(0) ? T(0) : wj * d;
            if (grad != nullptr) {
                T g = exp_(d) / r.z * scale;
                if (j == yr) g -= target;
                if (smooth) g = (g - per_class * wj) * c;
                gr[j] = g;
            }
        }
    }
    if (loss != nullptr) {
        if (smooth) u = row_sum<T, G>(u, lane);
        if (lane == 0) {
            const T d = shift(xr[yr], r.m);
            T l = wy == T(0) ? T(0) : wy * (r.log_z - d);
            if (smooth) l = keep * l + eps_c * (cnt ? wall * r.log_z - u : T(0));
            loss[row] = l;
        }
    }
}
