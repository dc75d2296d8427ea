#pragma once
// The stand-in runtime's kernel executor (see include/cuda_runtime.h).
#include <sys/mman.h>

#include <atomic>
#include <barrier>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include <cuda_runtime.h>

namespace fake_cuda {

/// The kernel executor: a pool of host threads, one per block thread. They only ever run kernels,
/// so they hold the key's access for good. Waking hundreds of threads costs far more than most
/// kernels here, so a kernel seen to finish without __syncthreads runs on the calling thread
/// afterwards, its threads one after another; one that needs barriers after all then aborts
/// the process with a message (CUDA kernels use barriers in every launch or in none). run() is
/// called by one thread at a time (the runtime's mutex).
class Executor {
 public:
  /// `key`: the protection key of device memory, or -1. The executor lives as long as the process
  /// (the runtime is never destroyed), so its threads are detached and never stopped.
  explicit Executor(int key) : key_(key) {}

  /// Runs `kernel`'s launch over grid x block threads, each calling body() (cudaLaunchKernel's
  /// closure over the arguments); returns when all have finished.
  void run(const void* kernel, dim3 grid, dim3 block, const std::function<void()>& body) {
    const unsigned threads = block.x * block.y * block.z;
    Job job{body, grid, block, threads};
    if (without_barriers_.count(kernel) != 0) {
      job.alone = true;
      for (unsigned t = 0; t < threads; ++t) run_blocks(job, t);
      return;
    }
    run_threads(job, threads);
    if (!job.synced.load()) without_barriers_.insert(kernel);
  }

  /// One barrier of the calling kernel thread's block; returns the OR of its threads' votes.
  static bool barrier(bool vote) {
    Job& job = *t_job;
    if (job.alone) {
      std::fputs("fake CUDA runtime: a kernel that ran without __syncthreads called it\n", stderr);
      std::abort();
    }
    t_synced = true;
    job.synced.store(true, std::memory_order_relaxed);
    // Three vote slots in turn: the one cleared here was last read before the previous barrier.
    const unsigned k = t_barriers++ % 3;
    if (t_thread == 0) job.votes[(k + 1) % 3].store(0, std::memory_order_relaxed);
    if (vote) job.votes[k].store(1, std::memory_order_relaxed);
    job.sync.arrive_and_wait();
    return job.votes[k].load(std::memory_order_relaxed) != 0;
  }

 private:
  struct Job {
    Job(const std::function<void()>& b, dim3 g, dim3 bl, unsigned n) : body(b), grid(g), block(bl), sync(n) {}
    const std::function<void()>& body;
    dim3 grid;
    dim3 block;
    std::barrier<> sync;
    std::atomic<int> votes[3] = {0, 0, 0};
    std::atomic<bool> synced{false};  // some thread met a barrier
    bool alone = false;               // run on the calling thread
    unsigned finished = 0;            // guarded by the executor's mutex
  };

  void run_threads(Job& job, unsigned threads) {
    std::unique_lock lock(mutex_);
    for (; started_ < threads; ++started_) std::thread([this, index = started_] { serve(index); }).detach();
    job_ = &job;
    ++generation_;
    wake_.notify_all();
    done_.wait(lock, [&] { return job.finished == threads; });
    job_ = nullptr;
  }

  void serve(unsigned index) {
    if (key_ >= 0) pkey_set(key_, 0);
    std::uint64_t seen = 0;
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen && job_ != nullptr; });
      seen = generation_;
      Job& job = *job_;
      const unsigned threads = job.block.x * job.block.y * job.block.z;
      if (index >= threads) continue;
      lock.unlock();
      run_blocks(job, index);
      lock.lock();
      if (++job.finished == threads) done_.notify_all();
    }
  }

  // Thread `index` of every block of the grid, the blocks in turn. A block whose threads met at
  // a barrier ends with one more, so the next block's use of the (static) shared memory cannot
  // overtake this one's; a block without barriers needs none, its threads being independent.
  static void run_blocks(Job& job, unsigned index) {
    t_job = &job;
    t_thread = index;
    t_barriers = 0;
    blockDim = job.block;
    gridDim = job.grid;
    threadIdx = {index % job.block.x, index / job.block.x % job.block.y, index / (job.block.x * job.block.y)};
    for (unsigned z = 0; z < job.grid.z; ++z) {
      for (unsigned y = 0; y < job.grid.y; ++y) {
        for (unsigned x = 0; x < job.grid.x; ++x) {
          blockIdx = {x, y, z};
          t_synced = false;
          job.body();
          if (t_synced) job.sync.arrive_and_wait();
        }
      }
    }
    t_job = nullptr;
  }

  static inline thread_local Job* t_job = nullptr;
  static inline thread_local unsigned t_thread = 0;
  static inline thread_local unsigned t_barriers = 0;
  static inline thread_local bool t_synced = false;

  int key_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  unsigned started_ = 0;                    // threads serving, indices [0, started_)
  std::set<const void*> without_barriers_;  // kernels seen to run without __syncthreads
  Job* job_ = nullptr;
  std::uint64_t generation_ = 0;
};

}  // namespace fake_cuda
