// SPDX-License-Identifier: MIT
// The Writer conformance suite, run against the writers that live in src/vss: the exec
// writer (with a real script) and the test fake. The libvirt VM writer instantiates the
// same suite in tests/unit/vmwriter/.
#include "unit/vss/writer_conformance.h"

#include "unit/vss/fake_writer.h"
#include "unit/vss/temp_dir.h"
#include "vss/exec_writer.h"
#include "vss/null_provider.h"

namespace vmshadow::vss {
namespace {

struct FakeWriterTraits {
    static std::shared_ptr<Writer> make() {
        return std::make_shared<testing::FakeWriter>("fake", std::make_shared<testing::EventLog>(),
                                                     2);
    }
    static std::shared_ptr<Provider> make_provider() { return std::make_shared<NullProvider>(); }
};

// A well-behaved host command: records events, exits 0, honours every event.
struct ExecWriterTraits {
    static std::shared_ptr<Writer> make() {
        static testing::TempDir dir;
        static auto script = dir.script("hook", "echo \"$1\" >> \"$(dirname \"$0\")/log\"\n");
        ExecWriterConfig config;
        config.name = "conformance";
        config.command = {script.string()};
        config.events.insert(std::begin(kAllEvents), std::end(kAllEvents));
        return std::make_shared<ExecWriter>(config);
    }
    static std::shared_ptr<Provider> make_provider() { return std::make_shared<NullProvider>(); }
};

using Writers = ::testing::Types<FakeWriterTraits, ExecWriterTraits>;
INSTANTIATE_TYPED_TEST_SUITE_P(Vss, WriterConformance, Writers);

}  // namespace
}  // namespace vmshadow::vss
