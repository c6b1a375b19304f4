//! Per-request context (request id and path) carried in a task-local, set by the middleware,
//! so error responses can name their `instance` and log lines their request without threading
//! the request through every function.

use std::future::Future;

#[derive(Clone, Debug)]
pub struct RequestContext {
    pub request_id: String,
    pub path: String,
}

tokio::task_local! {
    static CONTEXT: RequestContext;
}

pub async fn scope<F: Future>(ctx: RequestContext, f: F) -> F::Output {
    CONTEXT.scope(ctx, f).await
}

pub fn current_path() -> Option<String> {
    CONTEXT.try_with(|c| c.path.clone()).ok()
}

pub fn current_request_id() -> Option<String> {
    CONTEXT.try_with(|c| c.request_id.clone()).ok()
}
