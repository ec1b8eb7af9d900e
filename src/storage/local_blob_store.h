// SPDX-License-Identifier: MIT
#pragma once
// LocalBlobStore: a BlobStore in a local directory (or any POSIX filesystem: NFS, CephFS).
// A key is a relative path under the root; put writes a temp file in <root>/.tmp, fsyncs it,
// renames it into place (link(2) for if_absent) and fsyncs the folder, so a crash leaves the
// old object or the new one. list walks the folders under the prefix's deepest folder.
// Leftover temp files of a crashed put are removed by the next put of the same process's
// store after a grace period of an hour (they are never an object: list skips .tmp).

#include <memory>
#include <string>

#include "storage/blob_store.h"

namespace vmshadow::storage {

// The root is created if missing.
Result<std::unique_ptr<BlobStore>> open_local_blob_store(const std::string& root);

}  // namespace vmshadow::storage
