// bench_gpu_apply: the batched device apply of issue 7 ("64-byte runs into 1 GiB of device pages
// >= 60% of device-to-device copy bandwidth"), measured on device 0. A plain CUDA program timed
// with CUDA events (no Google Benchmark, so scripts/gpu-check.sh builds it on any GPU machine).
//
//   write, end to end    DeviceBackend::write of N 64-byte runs at random 64-byte-aligned offsets
//                        of a 1 GiB block, sorted by address as the engine hands them over
//                        (resolve_overlaps): packing + one pinned H2D copy + one scatter kernel
//   kernel, sorted       the run-copy kernel alone, same runs, payload already on the device
//   kernel, shuffled     the same runs in random order
//   scatter floor        a kernel of its own (ScatterFloor.cu) moving the same sorted rows with a
//                        4-byte slot index per row and nothing else: the bound for any kernel
//   anchors              cudaMemcpyAsync device-to-device of the same bytes (contiguous); a naive
//                        scatter of one cudaMemcpyAsync per run (on a prefix of the runs); the
//                        pinned host-to-device copy of the same bytes (the bound of "end to end")
//
// Every rate counts payload bytes once (N x 64 per pass), as a copy of those bytes would. The
// written bytes are read back and compared with the payload after each variant.
// Usage: bench_gpu_apply [--runs N] [--reps R] [--json FILE]
// Exit status: 0 measured, 77 no CUDA device (skipped), 1 wrong bytes or a CUDA error.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "CudaCheck.hpp"
#include "RunCopy.hpp"
#include "ScatterFloor.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/cuda/Cuda.hpp"
#include "mmsb/cuda/DeviceBackend.hpp"

namespace {

using namespace mmsb::cuda;

constexpr std::uint64_t kMemory = std::uint64_t{1} << 30;
constexpr std::uint64_t kRun = 64;
constexpr const char* kWhere = "bench_gpu_apply";

struct Options {
  std::uint64_t runs = std::uint64_t{2} << 20;  // 128 MiB of payload: one staging round
  int reps = 10;
  std::string json;
};

struct Rate {
  std::string name;
  double gbps_median;
  double gbps_best;
};

// GB/s (1e9 bytes) of `bytes` per timed call of fn (after one warm-up), median and best.
template <class F>
Rate measure(const std::string& name, std::uint64_t bytes, int reps, F&& seconds_of_one) {
  seconds_of_one();
  std::vector<double> rates;
  for (int i = 0; i < reps; ++i) rates.push_back(static_cast<double>(bytes) / seconds_of_one() / 1e9);
  std::sort(rates.begin(), rates.end());
  const Rate r{name, rates[rates.size() / 2], rates.back()};
  std::printf("  %-44s %9.1f GB/s (best %.1f)\n", name.c_str(), r.gbps_median, r.gbps_best);
  return r;
}

// Seconds of the commands fn enqueues on `stream`, by CUDA events.
template <class F>
double event_seconds(cudaStream_t stream, F&& enqueue) {
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), kWhere, "cudaEventCreate");
  check(cudaEventCreate(&stop), kWhere, "cudaEventCreate");
  check(cudaEventRecord(start, stream), kWhere, "cudaEventRecord");
  enqueue();
  check(cudaEventRecord(stop, stream), kWhere, "cudaEventRecord");
  check(cudaEventSynchronize(stop), kWhere, "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, start, stop), kWhere, "cudaEventElapsedTime");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms / 1e3;
}

void expect(bool ok, const char* what) {
  if (!ok) mmsb::fail(mmsb::ErrorCode::Internal, "wrong bytes after ", what);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) {
      o.runs = std::stoull(argv[++i]);
    } else if (a == "--reps" && i + 1 < argc) {
      o.reps = std::max(1, std::stoi(argv[++i]));
    } else if (a == "--json" && i + 1 < argc) {
      o.json = argv[++i];
    } else {
      mmsb::fail(mmsb::ErrorCode::InvalidArgument, "usage: bench_gpu_apply [--runs N] [--reps R] [--json FILE]");
    }
  }
  if (o.runs == 0 || o.runs > kMemory / kRun) {
    mmsb::fail(mmsb::ErrorCode::InvalidArgument, "--runs must be in [1, ", kMemory / kRun, "]");
  }
  return o;
}

int run(const Options& o) {
  if (!is_available()) {
    std::printf("bench_gpu_apply: skipped: no CUDA device\n");
    return 77;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), kWhere, "cudaGetDeviceProperties");
  check(cudaSetDevice(0), kWhere, "cudaSetDevice");
  const std::uint64_t bytes = o.runs * kRun;
  std::printf("bench_gpu_apply on %s (%d SMs): %llu runs of %llu bytes (%.1f MiB) into %llu MiB, %d reps\n",
              prop.name, prop.multiProcessorCount, static_cast<unsigned long long>(o.runs),
              static_cast<unsigned long long>(kRun), static_cast<double>(bytes) / (1 << 20),
              static_cast<unsigned long long>(kMemory >> 20), o.reps);

  DeviceBackend& backend = device_backend("cuda:0");
  const DevicePool::Block block = backend.allocate(kMemory);
  std::mt19937_64 rng(42);
  std::vector<std::uint32_t> slots(kMemory / kRun);
  std::iota(slots.begin(), slots.end(), 0u);
  std::shuffle(slots.begin(), slots.end(), rng);
  slots.resize(o.runs);
  std::sort(slots.begin(), slots.end());
  std::vector<std::byte> payload(bytes);
  for (std::uint64_t i = 0; i < bytes; i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(payload.data() + i, &v, 8);
  }
  std::vector<DeviceRun> runs(o.runs);
  for (std::uint64_t i = 0; i < o.runs; ++i) runs[i] = {block.data + std::uint64_t{slots[i]} * kRun, i * kRun, kRun};
  std::vector<std::byte> back(bytes);
  auto written_back = [&](const char* what) {
    std::fill(back.begin(), back.end(), std::byte{0});
    backend.read(runs, back);
    expect(back == payload, what);
  };

  std::vector<Rate> rates;
  const std::uint64_t kernels_before = backend.counters().kernels;
  rates.push_back(measure("write, end to end (DeviceBackend::write)", bytes, o.reps, [&] {
    const auto t0 = std::chrono::steady_clock::now();
    backend.write(runs, payload);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }));
  const std::uint64_t kernels_per_write = (backend.counters().kernels - kernels_before) / (o.reps + 1);
  written_back("DeviceBackend::write");

  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), kWhere, "cudaStreamCreateWithFlags");
  std::byte* src = nullptr;
  DeviceCopyRun* table = nullptr;
  std::byte* pinned = nullptr;
  check(cudaMalloc(&src, bytes), kWhere, "cudaMalloc");
  check(cudaMalloc(&table, o.runs * sizeof(DeviceCopyRun)), kWhere, "cudaMalloc");
  check(cudaMallocHost(&pinned, bytes), kWhere, "cudaMallocHost");
  std::memcpy(pinned, payload.data(), bytes);
  // Everything below runs on `stream` (non-blocking: it does not wait for the legacy stream).
  check(cudaMemcpyAsync(src, pinned, bytes, cudaMemcpyHostToDevice, stream), kWhere, "cudaMemcpyAsync");
  std::vector<DeviceCopyRun> host_table(o.runs);
  for (std::uint64_t i = 0; i < o.runs; ++i) host_table[i] = {runs[i].device, src + i * kRun, kRun};

  auto kernel_rate = [&](const std::string& name) {
    check(cudaMemcpyAsync(table, host_table.data(), o.runs * sizeof(DeviceCopyRun), cudaMemcpyHostToDevice, stream),
          kWhere, "cudaMemcpyAsync");
    check(cudaMemsetAsync(block.data, 0, kMemory, stream), kWhere, "cudaMemsetAsync");  // the kernel must write
    rates.push_back(measure(name, bytes, o.reps, [&] {
      return event_seconds(stream, [&] { check(launch_run_copy(table, o.runs, bytes, stream), kWhere, "launch"); });
    }));
    written_back(name.c_str());
  };
  kernel_rate("kernel alone, runs sorted by address");
  std::shuffle(host_table.begin(), host_table.end(), rng);
  kernel_rate("kernel alone, runs in random order");

  std::uint32_t* device_slots = nullptr;
  check(cudaMalloc(&device_slots, o.runs * sizeof(std::uint32_t)), kWhere, "cudaMalloc");
  check(cudaMemcpyAsync(device_slots, slots.data(), o.runs * sizeof(std::uint32_t), cudaMemcpyHostToDevice, stream),
        kWhere, "cudaMemcpyAsync");
  check(cudaMemsetAsync(block.data, 0, kMemory, stream), kWhere, "cudaMemsetAsync");
  rates.push_back(measure("scatter floor, 4-byte slot per row, sorted", bytes, o.reps, [&] {
    return event_seconds(stream, [&] {
      check(launch_scatter_floor(block.data, src, device_slots, o.runs, stream), kWhere, "launch_scatter_floor");
    });
  }));
  written_back("scatter floor");
  cudaFree(device_slots);

  rates.push_back(measure("cudaMemcpyAsync device to device (contiguous)", bytes, o.reps, [&] {
    return event_seconds(stream, [&] {
      check(cudaMemcpyAsync(block.data, src, bytes, cudaMemcpyDeviceToDevice, stream), kWhere, "cudaMemcpyAsync");
    });
  }));
  const std::uint64_t naive_runs = std::min<std::uint64_t>(o.runs, 100'000);
  rates.push_back(measure("naive scatter, one cudaMemcpyAsync per run", naive_runs * kRun, std::min(o.reps, 3), [&] {
    return event_seconds(stream, [&] {
      for (std::uint64_t i = 0; i < naive_runs; ++i) {
        check(cudaMemcpyAsync(runs[i].device, src + i * kRun, kRun, cudaMemcpyDeviceToDevice, stream), kWhere,
              "cudaMemcpyAsync");
      }
    });
  }));
  rates.push_back(measure("cudaMemcpyAsync pinned host to device", bytes, o.reps, [&] {
    return event_seconds(stream, [&] {
      check(cudaMemcpyAsync(src, pinned, bytes, cudaMemcpyHostToDevice, stream), kWhere, "cudaMemcpyAsync");
    });
  }));

  auto rate_of = [&](const char* prefix) {
    return std::find_if(rates.begin(), rates.end(), [&](const Rate& r) { return r.name.rfind(prefix, 0) == 0; })
        ->gbps_median;
  };
  const double d2d = rate_of("cudaMemcpyAsync device to device");
  const double kernel = rate_of("kernel alone, runs sorted");
  const double write = rate_of("write, end to end");
  const double naive = rate_of("naive scatter");
  const double floor = rate_of("scatter floor");
  const double h2d = rate_of("cudaMemcpyAsync pinned host to device");
  const bool met = kernel >= 0.6 * d2d;
  std::printf("  kernel / device-to-device copy: %.2f (target >= 0.60: %s)\n", kernel / d2d, met ? "met" : "NOT met");
  std::printf("  scatter floor / device-to-device copy: %.2f; kernel / scatter floor: %.2f\n", floor / d2d,
              kernel / floor);
  std::printf("  end-to-end write / device-to-device copy: %.3f; / pinned host-to-device copy: %.2f\n", write / d2d,
              write / h2d);
  std::printf("  kernel / naive per-run scatter: %.0fx; kernels per write: %llu\n", kernel / naive,
              static_cast<unsigned long long>(kernels_per_write));

  if (!o.json.empty()) {
    std::ofstream out(o.json);
    out << "{\n  \"device\": \"" << prop.name << "\",\n  \"sms\": " << prop.multiProcessorCount
        << ",\n  \"runs\": " << o.runs << ",\n  \"run_bytes\": " << kRun << ",\n  \"memory_bytes\": " << kMemory
        << ",\n  \"reps\": " << o.reps << ",\n  \"kernels_per_write\": " << kernels_per_write
        << ",\n  \"rates_GBps\": {";
    for (std::size_t i = 0; i < rates.size(); ++i) {
      out << (i ? "," : "") << "\n    \"" << rates[i].name << "\": {\"median\": " << rates[i].gbps_median
          << ", \"best\": " << rates[i].gbps_best << "}";
    }
    out << "\n  },\n  \"kernel_vs_d2d\": " << kernel / d2d << ",\n  \"floor_vs_d2d\": " << floor / d2d
        << ",\n  \"kernel_vs_floor\": " << kernel / floor << ",\n  \"write_vs_d2d\": " << write / d2d
        << ",\n  \"write_vs_h2d\": " << write / h2d << ",\n  \"kernel_vs_naive\": " << kernel / naive
        << ",\n  \"target_kernel_vs_d2d\": 0.6,\n  \"target_met\": " << (met ? "true" : "false") << "\n}\n";
  }
  cudaFreeHost(pinned);
  cudaFree(table);
  cudaFree(src);
  cudaStreamDestroy(stream);
  backend.release(block);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu_apply: %s\n", e.what());
    return 1;
  }
}
