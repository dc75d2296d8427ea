// The ingest ring (mmsb::IngestRing) against moodycamel::ConcurrentQueue and a std::mutex-guarded
// std::deque, moving uint64 items from 1 or 2 producers to one consumer.
//
// Every row moves the same kTotal items: producers push blocks of kBlock items (bulk under the
// lock for the deque), the consumer (the benchmark thread) takes up to kDrain items at a time and
// yields when it finds nothing, so all three queues get the same consumer. items_per_second is
// wall-clock (UseRealTime) over the whole transfer, thread start and join included (well under
// 1 ms of the 5-60 ms an iteration takes on a 2-vCPU VM). The ring is bounded (kRingCapacity;
// producers block when it is full); the two others grow without bound, so their producers never
// wait. On a 2-vCPU machine 2 producers + 1 consumer oversubscribe the CPUs: those rows measure
// scheduling as much as the queue.
#include <benchmark/benchmark.h>
#include <concurrentqueue/concurrentqueue.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "mmsb/engine/IngestRing.hpp"

namespace {

constexpr std::uint64_t kTotal = std::uint64_t{1} << 22;  // 4M items per iteration
constexpr std::size_t kBlock = 256;
constexpr std::size_t kDrain = 4096;
constexpr std::size_t kRingCapacity = std::size_t{1} << 16;

// Runs `producers` threads, each making its pusher with make_push() and pushing its share of
// kTotal in kBlock blocks, while this thread calls pop(buffer) -> count until kTotal items
// arrived. Checks the sum.
template <class MakePush, class Pop>
void transfer(benchmark::State& state, unsigned producers, MakePush make_push, Pop pop) {
  const std::uint64_t per_producer = kTotal / producers;
  std::vector<std::uint64_t> buffer(kDrain);
  for (auto _ : state) {
    std::vector<std::thread> threads;
    for (unsigned p = 0; p < producers; ++p) {
      threads.emplace_back([&make_push, p, per_producer] {
        auto push = make_push();
        std::vector<std::uint64_t> block(kBlock);
        for (std::uint64_t i = 0; i < per_producer; i += kBlock) {
          for (std::size_t j = 0; j < kBlock; ++j) block[j] = p * per_producer + i + j;
          push(std::span<const std::uint64_t>(block));
        }
      });
    }
    std::uint64_t received = 0, sum = 0;
    while (received < kTotal) {
      const std::size_t got = pop(std::span<std::uint64_t>(buffer));
      for (std::size_t i = 0; i < got; ++i) sum += buffer[i];
      received += got;
      if (got == 0) std::this_thread::yield();
    }
    for (auto& t : threads) t.join();
    if (sum != kTotal * (kTotal - 1) / 2) state.SkipWithError("items lost or duplicated");
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * kTotal));
}

void BM_IngestRing(benchmark::State& state) {
  mmsb::IngestRing<std::uint64_t> ring(kRingCapacity);
  transfer(
      state, static_cast<unsigned>(state.range(0)),
      [&ring] { return [&ring](std::span<const std::uint64_t> b) { ring.push(b); }; },
      [&ring](std::span<std::uint64_t> out) { return ring.drain(out); });
}

void BM_MoodycamelQueue(benchmark::State& state) {
  moodycamel::ConcurrentQueue<std::uint64_t> queue;
  transfer(
      state, static_cast<unsigned>(state.range(0)),
      [&queue] {
        // One token per producer thread, kept for all its pushes (moodycamel's fast path).
        return [&queue, token = moodycamel::ProducerToken(queue)](std::span<const std::uint64_t> b) mutable {
          queue.enqueue_bulk(token, b.data(), b.size());
        };
      },
      [&queue](std::span<std::uint64_t> out) { return queue.try_dequeue_bulk(out.data(), out.size()); });
}

void BM_MutexDeque(benchmark::State& state) {
  std::mutex mutex;
  std::deque<std::uint64_t> queue;
  transfer(
      state, static_cast<unsigned>(state.range(0)),
      [&] {
        return [&](std::span<const std::uint64_t> b) {
          std::lock_guard lock(mutex);
          queue.insert(queue.end(), b.begin(), b.end());
        };
      },
      [&](std::span<std::uint64_t> out) {
        std::lock_guard lock(mutex);
        const std::size_t n = std::min(out.size(), queue.size());
        std::copy_n(queue.begin(), n, out.begin());
        queue.erase(queue.begin(), queue.begin() + static_cast<std::ptrdiff_t>(n));
        return n;
      });
}

BENCHMARK(BM_IngestRing)->ArgName("producers")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MoodycamelQueue)->ArgName("producers")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MutexDeque)->ArgName("producers")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
