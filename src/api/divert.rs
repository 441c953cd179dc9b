//! A middleware for the few requests it concerns: the rest go straight to the inner service,
//! without the middleware's future or the box it puts the next service's future in.

use std::rc::Rc;

use actix_web::Error;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use futures_util::TryFutureExt;
use futures_util::future::{Either, LocalBoxFuture, MapOk};

/// Wraps `middleware` so it sees only the requests `concerns` picks.
pub struct Divert<T> {
    concerns: fn(&ServiceRequest) -> bool,
    middleware: T,
}

impl<T> Divert<T> {
    pub fn new(concerns: fn(&ServiceRequest) -> bool, middleware: T) -> Self {
        Self {
            concerns,
            middleware,
        }
    }
}

/// The inner service, shared between the straight path and the middleware.
pub struct Shared<S>(Rc<S>);

impl<S: Service<ServiceRequest>> Service<ServiceRequest> for Shared<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        self.0.call(req)
    }
}

type Straight<B, B2> = fn(ServiceResponse<B>) -> ServiceResponse<EitherBody<B, B2>>;
type Diverted<B, B2> = fn(ServiceResponse<B2>) -> ServiceResponse<EitherBody<B, B2>>;

impl<S, B, T, B2> Transform<S, ServiceRequest> for Divert<T>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
    T: Transform<Shared<S>, ServiceRequest, Response = ServiceResponse<B2>, Error = Error>,
    T::Future: 'static,
    B2: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B, B2>>;
    type Error = Error;
    type Transform = DivertService<S, T::Transform>;
    type InitError = T::InitError;
    type Future = LocalBoxFuture<'static, Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let inner = Rc::new(service);
        let middleware = self.middleware.new_transform(Shared(inner.clone()));
        let concerns = self.concerns;
        Box::pin(async move {
            Ok(DivertService {
                inner,
                middleware: middleware.await?,
                concerns,
            })
        })
    }
}

pub struct DivertService<S, M> {
    inner: Rc<S>,
    middleware: M,
    concerns: fn(&ServiceRequest) -> bool,
}

impl<S, B, M, B2> Service<ServiceRequest> for DivertService<S, M>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    M: Service<ServiceRequest, Response = ServiceResponse<B2>, Error = Error>,
{
    type Response = ServiceResponse<EitherBody<B, B2>>;
    type Error = Error;
    type Future = Either<MapOk<S::Future, Straight<B, B2>>, MapOk<M::Future, Diverted<B, B2>>>;

    forward_ready!(inner);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        if (self.concerns)(&req) {
            Either::Right(
                self.middleware
                    .call(req)
                    .map_ok(ServiceResponse::map_into_right_body as Diverted<B, B2>),
            )
        } else {
            Either::Left(
                self.inner
                    .call(req)
                    .map_ok(ServiceResponse::map_into_left_body as Straight<B, B2>),
            )
        }
    }
}
