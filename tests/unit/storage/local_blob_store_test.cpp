// SPDX-License-Identifier: MIT
// The conformance suite on the local directory store, and what is particular to it.
#include "storage/local_blob_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "blob_store_conformance.h"

namespace vmshadow::storage {
namespace {

namespace fs = std::filesystem;
using conformance::BlobStoreConformance;
using conformance::ConformanceBackend;

std::string unique_temp_folder() {
    static std::atomic<int> counter{0};
    return (fs::temp_directory_path() /
            ("vmshadow-localstore-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
        .string();
}

// The store's folder is removed with the store, whatever the test did.
std::shared_ptr<BlobStore> make_local_store() {
    auto root = unique_temp_folder();
    auto store = open_local_blob_store(root);
    if (!store) {
        ADD_FAILURE() << store.error().message();
        return nullptr;
    }
    struct Holder {
        std::unique_ptr<BlobStore> store;
        std::string root;
        ~Holder() {
            store.reset();
            fs::remove_all(root);
        }
    };
    auto holder = std::make_shared<Holder>(std::move(*store), root);
    return std::shared_ptr<BlobStore>(holder, holder->store.get());
}

INSTANTIATE_TEST_SUITE_P(Local, BlobStoreConformance,
                         ::testing::Values(ConformanceBackend{"local", make_local_store}),
                         conformance::conformance_backend_name);

TEST(LocalBlobStore, TheTempFolderIsNoKeyAndNeverListed) {
    auto store = make_local_store();
    ASSERT_TRUE(store->put("a", conformance::view("x")));
    // A crashed put's leftover: in .tmp, never an object.
    std::ofstream(fs::path(store->location()) / ".tmp" / "put-crashed") << "partial";
    auto listed = store->list("");
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->size(), 1u);
    EXPECT_EQ((*listed)[0].key, "a");
    auto put = store->put(".tmp/x", conformance::view("x"));
    ASSERT_FALSE(put);
    EXPECT_EQ(put.error().kind(), ErrorKind::invalid_argument);
}

TEST(LocalBlobStore, AFailedPutLeavesNoTempFile) {
    auto store = make_local_store();
    ASSERT_FALSE(store->put_file("k", "/nonexistent/vmshadow-missing"));
    ASSERT_TRUE(store->put("k", conformance::view("x")));
    ASSERT_FALSE(store->put("k", conformance::view("y"), PutOptions{.if_absent = true}));
    fs::path temp = fs::path(store->location()) / ".tmp";
    EXPECT_TRUE(fs::is_empty(temp));
}

TEST(LocalBlobStore, ARootWithATrailingSlashIsTheSameStore) {
    auto root = unique_temp_folder();
    {
        auto store = open_local_blob_store(root + "/");
        ASSERT_TRUE(store);
        EXPECT_EQ((*store)->location(), root);
        ASSERT_TRUE((*store)->put("a/b/c", conformance::view("x")));
        auto listed = (*store)->list("a/");
        ASSERT_TRUE(listed);
        ASSERT_EQ(listed->size(), 1u);
        EXPECT_EQ((*listed)[0].key, "a/b/c");
    }
    fs::remove_all(root);
}

TEST(LocalBlobStore, OpeningAFileInsteadOfAFolderIsRefused) {
    auto path = unique_temp_folder();
    std::ofstream(path) << "file";
    auto store = open_local_blob_store(path);
    EXPECT_FALSE(store);
    fs::remove(path);
}

}  // namespace
}  // namespace vmshadow::storage
