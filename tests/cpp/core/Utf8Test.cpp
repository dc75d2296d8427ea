// is_utf8 against Python's strict decoder, which is who reads the strings it lets through: every
// form Table 3-7 of the Unicode standard allows, and every kind of ill-formed sequence.
#include <gtest/gtest.h>

#include <string>

#include "mmsb/core/Utf8.hpp"

namespace mmsb {
namespace {

TEST(Utf8Test, WellFormedTextPasses) {
  for (const std::string& s : {std::string(), std::string("plain ascii"), std::string("a\0b", 3),
                              std::string("\xc2\x80"), std::string("\xdf\xbf"),            // 2 bytes
                              std::string("\xe0\xa0\x80"), std::string("\xed\x9f\xbf"),    // 3, around surrogates
                              std::string("\xee\x80\x80"), std::string("\xef\xbf\xbf"),
                              std::string("\xf0\x90\x80\x80"), std::string("\xf4\x8f\xbf\xbf"),  // 4, up to U+10FFFF
                              std::string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80")}) {
    EXPECT_TRUE(is_utf8(s)) << s;
  }
}

TEST(Utf8Test, IllFormedSequencesFail) {
  for (const std::string& s : {std::string("\x80"), std::string("\xbf"),   // a continuation alone
                              std::string("\xc0\x80"), std::string("\xc1\xbf"),    // overlong 2
                              std::string("\xe0\x9f\xbf"),                         // overlong 3
                              std::string("\xf0\x8f\xbf\xbf"),                     // overlong 4
                              std::string("\xed\xa0\x80"), std::string("\xed\xbf\xbf"),  // surrogates
                              std::string("\xf4\x90\x80\x80"), std::string("\xf5\x80\x80\x80"),  // past U+10FFFF
                              std::string("\xff"), std::string("\xfe"),
                              std::string("\xc3"), std::string("\xe2\x82"), std::string("\xf0\x9f\x98"),  // cut short
                              std::string("\xe2\x28\xa1"), std::string("ok\xc3\x28")}) {  // bad continuation
    EXPECT_FALSE(is_utf8(s)) << testing::PrintToString(s);
  }
}

}  // namespace
}  // namespace mmsb
