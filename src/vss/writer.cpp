// SPDX-License-Identifier: MIT
#include "vss/writer.h"

namespace vmshadow::vss {

WriterResult deliver(Writer& writer, EventContext& context) {
    switch (context.event) {
        case Event::identify: {
            auto metadata = writer.identify(context);
            if (!metadata) return std::unexpected(metadata.error());
            return {};
        }
        case Event::prepare_backup:
            return writer.prepare_backup(context);
        case Event::prepare_snapshot:
            return writer.prepare_snapshot(context);
        case Event::freeze:
            return writer.freeze(context);
        case Event::thaw:
            return writer.thaw(context);
        case Event::post_snapshot:
            return writer.post_snapshot(context);
        case Event::backup_complete:
            return writer.backup_complete(context);
        case Event::abort:
            return writer.abort(context);
        case Event::pre_restore:
            return writer.pre_restore(context);
        case Event::post_restore:
            return writer.post_restore(context);
    }
    return std::unexpected(veto_nonretryable("unknown event"));
}

}  // namespace vmshadow::vss
