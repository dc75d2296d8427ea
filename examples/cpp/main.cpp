// A C++ program on the installed mmsb package: two float64 source pages, a derived page kept equal
// to 2*a + b by the built-in sum_product reduce, a columnar delta batch, a rolled-back and a
// committed transaction. Every step is checked against values computed here; any mismatch exits 1,
// so `scripts/test-install.sh` proves the package links and the engine behaves.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "mmsb/BuildConfig.hpp"
#include "mmsb/core/Error.hpp"
#include "mmsb/delta/DeltaBatch.hpp"
#include "mmsb/engine/BuildInfo.hpp"
#include "mmsb/engine/Bus.hpp"

namespace {

constexpr std::uint64_t kElems = 8;
int failures = 0;

std::span<const std::byte> bytes_of(const double& x) { return {reinterpret_cast<const std::byte*>(&x), sizeof x}; }

std::vector<double> read_page(mmsb::Bus& bus, mmsb::PageId id) {
  std::vector<double> v(kElems);
  bus.snapshot(id, std::as_writable_bytes(std::span(v)));
  return v;
}

void print(const char* name, const std::vector<double>& v) {
  std::printf("  %s =", name);
  for (double x : v) std::printf(" %g", x);
  std::printf("\n");
}

// Exact comparison: every value here is a small integer, exact in float64.
void expect_page(mmsb::Bus& bus, mmsb::PageId id, const char* name, const std::vector<double>& want) {
  const std::vector<double> got = read_page(bus, id);
  print(name, got);
  for (std::uint64_t i = 0; i < kElems; ++i) {
    if (got[i] != want[i]) {
      std::printf("MISMATCH %s[%llu]: got %g, want %g\n", name, static_cast<unsigned long long>(i), got[i], want[i]);
      ++failures;
    }
  }
}

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("MISMATCH %s\n", what.c_str());
    ++failures;
  }
}

std::vector<double> two_a_plus_b(const std::vector<double>& a, const std::vector<double>& b) {
  std::vector<double> c(kElems);
  for (std::uint64_t i = 0; i < kElems; ++i) c[i] = 2 * a[i] + b[i];
  return c;
}

}  // namespace

int main() {
  const mmsb::BuildInfo info = mmsb::build_info();
  std::printf("mmsb %s (header %s), %s, cuda=%d tbb=%d backend=%s\n", info.version.c_str(), MMSB_VERSION_STRING,
              info.build_type.c_str(), int(info.cuda), int(info.tbb), info.parallel_backend.c_str());
  expect(info.version == MMSB_VERSION_STRING, "installed header and library versions differ");

  mmsb::Bus bus;
  const mmsb::PageSpec spec{kElems * sizeof(double), mmsb::DType::Float64, {kElems}};
  const mmsb::PageId a = bus.create_page(spec).id;
  const mmsb::PageId b = bus.create_page(spec).id;
  mmsb::PageSpec derived_spec = spec;
  derived_spec.name = "c";
  const mmsb::PageId c = bus.create_page(derived_spec).id;
  const double weights[] = {2.0, 1.0};
  bus.depend(c, std::vector<mmsb::PageId>{a, b},
             {mmsb::RecomputeKind::Reduce, mmsb::SemiringKind::SumProduct, ""}, weights);
  expect(bus.find_page("c") == c, "find_page(\"c\")");

  // One batch writes every element of a and b: one delta (and lsn) per row.
  std::vector<double> va(kElems), vb(kElems);
  mmsb::DeltaBatch batch;
  for (std::uint64_t i = 0; i < kElems; ++i) {
    va[i] = double(i + 1);
    vb[i] = double(10 * i);
    batch.add(a, i * sizeof(double), bytes_of(va[i]));
    batch.add(b, i * sizeof(double), bytes_of(vb[i]));
  }
  const mmsb::Lsn before = bus.lsn();
  const mmsb::Lsn last = bus.apply_batch(batch.view());
  std::printf("batch of %zu rows: lsn %llu -> %llu\n", batch.rows(), static_cast<unsigned long long>(before),
              static_cast<unsigned long long>(last));
  expect(last >= before + batch.rows(), "apply_batch committed one lsn per row");
  expect(bus.page(a).epoch.load() == kElems, "page a's epoch counts its rows");
  expect_page(bus, c, "c", two_a_plus_b(va, vb));

  // A rolled-back transaction leaves every page as it was, the derived one included.
  const double big = 1000;
  bus.begin_transaction();
  bus.write(a, 0, bytes_of(big));
  bus.rollback_transaction();
  std::printf("after rollback:\n");
  expect_page(bus, a, "a", va);
  expect_page(bus, c, "c", two_a_plus_b(va, vb));

  // A committed one keeps both writes, and c follows them.
  bus.begin_transaction();
  bus.write(a, 0, bytes_of(big));
  const double minus_one = -1;
  bus.write(b, (kElems - 1) * sizeof(double), bytes_of(minus_one));
  bus.commit_transaction();
  va[0] = big;
  vb[kElems - 1] = minus_one;
  std::printf("after commit:\n");
  expect_page(bus, a, "a", va);
  expect_page(bus, b, "b", vb);
  expect_page(bus, c, "c", two_a_plus_b(va, vb));

  // Bad input raises the engine's typed error and changes nothing.
  const mmsb::Lsn lsn_before_error = bus.lsn();
  try {
    bus.write(a, kElems * sizeof(double), bytes_of(big));
    expect(false, "a write past the end of the page was accepted");
  } catch (const mmsb::Error& e) {
    std::printf("rejected as expected (%s): %s\n", mmsb::error_class_name(e.code()), e.what());
    expect(e.code() == mmsb::ErrorCode::InvalidDelta, "write past the end raises InvalidDelta");
  }
  expect(bus.lsn() == lsn_before_error, "a rejected write commits nothing");

  const mmsb::IntegrityReport report = bus.verify();
  expect(report.ok, "verify() found problems");
  std::printf("%s: %d mismatch(es)\n", failures == 0 ? "OK" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}
