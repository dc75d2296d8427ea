// The stand-in runtime's own promises (include/cuda_runtime.h), each of which a CUDA test relies on
// to fail where a GPU would: late streams, device memory the host cannot touch, checked copies,
// block barriers and votes over host threads.
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <atomic>
#include <cstring>
#include <vector>

namespace {

void* device_alloc(std::size_t n) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, n), cudaSuccess);
  return p;
}

TEST(FakeCuda, AsyncCopiesLandOnlyWhenTheStreamIsSynchronized) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  void* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, 64), cudaSuccess);
  void* dev = device_alloc(64);
  std::memset(pinned, 7, 64);
  ASSERT_EQ(cudaMemcpyAsync(dev, pinned, 64, cudaMemcpyHostToDevice, s), cudaSuccess);
  std::memset(pinned, 9, 64);  // reused before the copy ran: the device gets the 9s
  ASSERT_EQ(cudaMemsetAsync(dev, 1, 8, s), cudaSuccess);
  std::vector<unsigned char> out(64, 0);
  void* back = nullptr;
  ASSERT_EQ(cudaMallocHost(&back, 64), cudaSuccess);
  std::memset(back, 0, 64);
  ASSERT_EQ(cudaMemcpyAsync(back, dev, 64, cudaMemcpyDeviceToHost, s), cudaSuccess);
  EXPECT_EQ(static_cast<unsigned char*>(back)[20], 0) << "a pinned copy must wait for the stream";
  ASSERT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  EXPECT_EQ(static_cast<unsigned char*>(back)[0], 1);
  EXPECT_EQ(static_cast<unsigned char*>(back)[20], 9);
  // A copy into pageable memory is complete on return.
  ASSERT_EQ(cudaMemcpyAsync(out.data(), dev, 64, cudaMemcpyDeviceToHost, s), cudaSuccess);
  EXPECT_EQ(out[63], 9);
  EXPECT_EQ(cudaFree(dev), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(pinned), cudaSuccess);
  EXPECT_EQ(cudaFreeHost(back), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

TEST(FakeCuda, EventsAreReachedWhenTheirStreamRuns) {
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  cudaEvent_t start = nullptr, end = nullptr;
  ASSERT_EQ(cudaEventCreate(&start), cudaSuccess);
  ASSERT_EQ(cudaEventCreate(&end), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(start, s), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(end, s), cudaSuccess);
  float ms = -1;
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, end), cudaErrorNotReady);
  cudaGetLastError();
  ASSERT_EQ(cudaEventSynchronize(end), cudaSuccess);
  ASSERT_EQ(cudaEventElapsedTime(&ms, start, end), cudaSuccess);
  EXPECT_GE(ms, 0.0f);
  EXPECT_EQ(cudaEventDestroy(start), cudaSuccess);
  EXPECT_EQ(cudaEventDestroy(end), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(s), cudaSuccess);
}

TEST(FakeCuda, CopiesOutsideAnAllocationOrOfTheWrongKindAreRefused) {
  auto* dev = static_cast<unsigned char*>(device_alloc(256));
  std::vector<unsigned char> host(512);
  EXPECT_EQ(cudaMemcpy(dev, host.data(), 257, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(dev + 200, host.data(), 57, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), dev, 64, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(dev, host.data(), 64, cudaMemcpyDeviceToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(dev, host.data(), 256, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaFree(dev), cudaSuccess);
  EXPECT_EQ(cudaFree(dev), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(host.data(), dev, 64, cudaMemcpyDeviceToHost), cudaErrorInvalidValue) << "freed memory";
  cudaGetLastError();
}

TEST(FakeCuda, MemoryIsCountedAndRefusedBeyondTheDevice) {
  std::size_t free0 = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free0, &total), cudaSuccess);
  void* a = device_alloc(1 << 20);
  std::size_t free1 = 0;
  ASSERT_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
  EXPECT_EQ(free0 - free1, std::size_t{1} << 20);
  void* b = nullptr;
  EXPECT_EQ(cudaMalloc(&b, total), cudaErrorMemoryAllocation);
  EXPECT_EQ(cudaMallocManaged(&b, total), cudaErrorMemoryAllocation);
  cudaGetLastError();
  EXPECT_EQ(cudaFree(a), cudaSuccess);
}

TEST(FakeCuda, TheHostCannotTouchDeviceMemory) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // kernels' host threads may be running
  auto* dev = static_cast<volatile unsigned char*>(device_alloc(64));
  EXPECT_DEATH(static_cast<void>(dev[0]), "");
  void* managed = nullptr;
  ASSERT_EQ(cudaMallocManaged(&managed, 64), cudaSuccess);
  static_cast<unsigned char*>(managed)[0] = 1;  // managed memory is the host's too
  EXPECT_EQ(cudaFree(managed), cudaSuccess);
  EXPECT_EQ(cudaFree(const_cast<unsigned char*>(dev)), cudaSuccess);
}

std::atomic<int> g_mismatches{0};

// Each block sums its threads' indices through shared memory and votes on odd blocks.
void block_sum(unsigned* out, int* votes) {
  __shared__ unsigned cells[256];
  cells[threadIdx.x] = threadIdx.x;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) cells[threadIdx.x] += cells[threadIdx.x + half];
    __syncthreads();
  }
  const int odd = __syncthreads_or(threadIdx.x == 0 && blockIdx.x % 2 == 1);
  if (odd != static_cast<int>(blockIdx.x % 2)) g_mismatches.fetch_add(1);
  if (threadIdx.x == 0) {
    out[blockIdx.x] = cells[0];
    votes[blockIdx.x] = odd;
  }
}

TEST(FakeCuda, KernelsRunEveryThreadWithBlockBarriersAndVotes) {
  constexpr unsigned kBlocks = 9;
  auto* out = static_cast<unsigned*>(device_alloc(kBlocks * sizeof(unsigned)));
  auto* votes = static_cast<int*>(device_alloc(kBlocks * sizeof(int)));
  void* args[] = {&out, &votes};
  ASSERT_EQ(cudaLaunchKernel(block_sum, dim3(kBlocks), dim3(256), args, 0, nullptr), cudaSuccess);
  std::vector<unsigned> sums(kBlocks);
  std::vector<int> odd(kBlocks);
  ASSERT_EQ(cudaMemcpy(sums.data(), out, sizeof(unsigned) * kBlocks, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(odd.data(), votes, sizeof(int) * kBlocks, cudaMemcpyDeviceToHost), cudaSuccess);
  for (unsigned b = 0; b < kBlocks; ++b) {
    EXPECT_EQ(sums[b], 255u * 256u / 2u) << "block " << b;
    EXPECT_EQ(odd[b], static_cast<int>(b % 2)) << "block " << b;
  }
  EXPECT_EQ(g_mismatches.load(), 0);
  EXPECT_EQ(cudaLaunchKernel(block_sum, dim3(1), dim3(2048), args, 0, nullptr), cudaErrorInvalidConfiguration);
  cudaGetLastError();
  cudaFree(out);
  cudaFree(votes);
}

}  // namespace
