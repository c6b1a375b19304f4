//! Carries the sender's span across an actor's mailbox. A handler runs later, in the actor's own
//! task, where the sender's span is not current, so the trace of a request would break at every
//! `ask`: each backend call inside an actor would start a trace of its own. [`ask`](super::ask)
//! sends the message wrapped in [`Traced`] with the current span; the actor's `Traced` handler
//! enters that span while its own handler runs, and [`guarded`](super::guarded) keeps it for
//! the handler's future.

use tracing::Span;

/// A message and the span it was sent from.
pub struct Traced<M> {
    pub msg: M,
    pub span: Span,
}

impl<M> Traced<M> {
    /// `msg`, sent from the current span.
    pub fn current(msg: M) -> Self {
        Traced {
            msg,
            span: Span::current(),
        }
    }
}

impl<M: actix::Message> actix::Message for Traced<M> {
    type Result = M::Result;
}

/// Lets `$actor` take each of the listed messages wrapped in [`Traced`] too. (One impl per
/// message: an impl generic over the message recurses without end in the trait solver.)
macro_rules! traced_handlers {
    ($actor:ty: $($msg:ty),+ $(,)?) => {$(
        impl actix::Handler<$crate::actors::traced::Traced<$msg>> for $actor {
            type Result = <$actor as actix::Handler<$msg>>::Result;
            fn handle(
                &mut self,
                traced: $crate::actors::traced::Traced<$msg>,
                ctx: &mut <$actor as actix::Actor>::Context,
            ) -> Self::Result {
                let _entered = traced.span.enter();
                <$actor as actix::Handler<$msg>>::handle(self, traced.msg, ctx)
            }
        }
    )+};
}
#[cfg(test)]
pub(crate) use traced_handlers;

use crate::actors::{
    auth::AuthActor, inventory::InventoryActor, mailer::MailerActor, order::OrderActor,
};
use crate::messages::{auth::*, inventory::*, mailer::*, order::*};

traced_handlers!(AuthActor: Register, Login, Refresh, Logout, GetUser);
traced_handlers!(
    InventoryActor: ListProducts,
    GetProduct,
    CreateProduct,
    UpdateProduct,
    ReserveStock,
    ReleaseStock
);
traced_handlers!(MailerActor: SendOrderEmail);
traced_handlers!(OrderActor: CreateOrder, GetOrder, ListOrders, ListAllOrders, CancelOrder, ProcessOrders);
