//! The OpenAPI document, Swagger UI, and the route table used to tell 405 from 404.

use actix_web::{HttpResponse, ResponseError, http::header, web};
use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::api::error::{ApiError, ProblemCode};
use crate::forwarded::PublicOrigin;
use utoipa::openapi::OpenApi;
use utoipa_swagger_ui::Config;

/// The serialised document, built once at start-up. It is asked for seldom (Swagger UI, client
/// generators) and is about 450 KB, so it is kept gzip-compressed (about a tenth of that in
/// memory, README "Performance") and inflated per request, in about a millisecond.
pub struct OpenApiJson {
    gzip: Box<[u8]>,
    len: usize,
    /// Whether `servers` comes from `server.public_url` (else from each request's origin).
    fixed_servers: bool,
}

impl OpenApiJson {
    pub fn new(api: &OpenApi) -> std::io::Result<Self> {
        use std::io::Write;
        let json = serde_json::to_vec(api)?;
        let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
        gzip.write_all(&json)?;
        Ok(Self {
            gzip: gzip.finish()?.into_boxed_slice(),
            len: json.len(),
            fixed_servers: api.servers.is_some(),
        })
    }

    /// The document with `servers` naming the origin the caller used (through a trusted
    /// proxy: its public scheme, host and prefix), so "Try it out" works from anywhere.
    fn for_origin(&self, origin: &PublicOrigin) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut json = Vec::with_capacity(self.len + 128);
        let mut document = GzDecoder::new(&self.gzip[..]);
        if !self.fixed_servers {
            // Inflated after the servers, in one pass: the document's own `{` is replaced.
            let mut first = [0; 1];
            document.read_exact(&mut first)?;
            if first != *b"{" {
                json.extend_from_slice(&first);
            } else {
                let servers = serde_json::json!([{ "url": origin.base_url() }]);
                json.extend_from_slice(b"{\"servers\":");
                json.extend_from_slice(servers.to_string().as_bytes());
                if self.len > 2 {
                    json.push(b',');
                }
            }
        }
        document.read_to_end(&mut json)?;
        Ok(json)
    }
}

/// Path templates of the documented routes with their methods.
pub struct RouteTable {
    routes: Vec<(Vec<String>, Vec<String>)>,
}

impl RouteTable {
    pub fn from_openapi(api: &OpenApi) -> Self {
        let routes = api
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let segments = path.split('/').map(str::to_owned).collect();
                let methods = [
                    ("GET", &item.get),
                    ("PUT", &item.put),
                    ("POST", &item.post),
                    ("DELETE", &item.delete),
                    ("PATCH", &item.patch),
                    ("HEAD", &item.head),
                ]
                .into_iter()
                .filter(|(_, operation)| operation.is_some())
                .map(|(method, _)| method.to_owned())
                .collect();
                (segments, methods)
            })
            .collect();
        Self { routes }
    }

    /// A table of the given templates and their methods, for a listener that serves a few
    /// routes of its own (`/metrics` alone on `metrics.bind`).
    pub fn of(routes: &[(&str, &[&str])]) -> Self {
        Self { routes: Vec::new() }.with(routes)
    }

    /// This table and the given templates: routes served but not in the OpenAPI document
    /// (the document itself, Swagger UI, `/metrics`).
    pub fn with(mut self, routes: &[(&str, &[&str])]) -> Self {
        self.routes.extend(routes.iter().map(|(path, methods)| {
            let segments = path.split('/').map(str::to_owned).collect();
            (segments, methods.iter().map(|m| (*m).to_owned()).collect())
        }));
        self
    }

    /// The methods documented for `path`, if it matches a route template.
    pub fn allowed_methods(&self, path: &str) -> Option<Vec<String>> {
        let segments: Vec<&str> = path.split('/').collect();
        let mut methods: Vec<String> = self
            .routes
            .iter()
            .filter(|(template, _)| {
                template.len() == segments.len()
                    && template
                        .iter()
                        .zip(&segments)
                        .all(|(t, s)| match t.split_once('{') {
                            // A parameter after a fixed start (`bot{token}`) or alone.
                            Some((start, _)) => s.len() > start.len() && s.starts_with(start),
                            None => t == s,
                        })
            })
            .flat_map(|(_, methods)| methods.iter().cloned())
            .collect();
        methods.sort();
        methods.dedup();
        (!methods.is_empty()).then_some(methods)
    }
}

async fn openapi_json(
    req: actix_web::HttpRequest,
    doc: web::Data<OpenApiJson>,
) -> Result<HttpResponse, ApiError> {
    let json = doc
        .for_origin(&PublicOrigin::of(&req))
        .map_err(|e| ApiError::new(ProblemCode::Internal, format!("OpenAPI document: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(json))
}

async fn docs_redirect() -> HttpResponse {
    // Relative, so it stays right behind a reverse proxy that adds a path prefix.
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "docs/"))
        .finish()
}

/// `/openapi.json`, `/docs` and Swagger UI under `/docs/`. `persist_authorization`: the UI
/// keeps the entered key in the browser's local storage (where any script on the origin, and
/// anyone at the browser later, can read it), so it is off unless configured.
pub fn docs_routes(cfg: &mut web::ServiceConfig, persist_authorization: bool) {
    // The UI loads the document relative to its own page, so a path prefix is kept.
    let config = Config::from("../openapi.json").persist_authorization(persist_authorization);
    cfg.app_data(web::Data::new(config))
        .route("/openapi.json", web::get().to(openapi_json))
        .route("/docs", web::get().to(docs_redirect))
        // Guarded like the library's resource: other methods fall through to the API's 404/405.
        .service(
            web::resource("/docs/{file:.*}")
                .guard(actix_web::guard::Get())
                .to(swagger_ui),
        );
}

/// A Swagger UI file. Its assets are served from the binary as `Bytes::from_static` (the
/// library's own actix handler copies each one, 1.5 MB for the bundle, to the heap per request);
/// only the files it fills in with the configuration are built per request.
async fn swagger_ui(file: web::Path<String>, config: web::Data<Config<'static>>) -> HttpResponse {
    match utoipa_swagger_ui::serve(&file, config.into_inner()) {
        Ok(Some(file)) => {
            let mut response = HttpResponse::Ok();
            if file.gzpipped {
                response.insert_header((header::CONTENT_ENCODING, "gzip"));
            }
            let body = match file.bytes {
                std::borrow::Cow::Borrowed(bytes) => Bytes::from_static(bytes),
                std::borrow::Cow::Owned(bytes) => Bytes::from(bytes),
            };
            response.content_type(file.content_type).body(body)
        }
        // Problem documents like every other answer, not empty bodies.
        Ok(None) => ApiError::new(
            ProblemCode::RouteNotFound,
            "Swagger UI has no such file; it starts at /docs/",
        )
        .error_response(),
        Err(error) => {
            tracing::error!(%error, "Swagger UI file could not be prepared");
            ApiError::new(ProblemCode::Internal, "Swagger UI could not be prepared")
                .error_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kept compressed, the document is served whole: the same JSON as generated, with the
    /// caller's origin as its only server unless `servers` is fixed.
    #[test]
    fn the_compressed_document_is_served_whole() {
        let mut api = crate::api::openapi_document();
        api.servers = None;
        let generated = serde_json::to_value(&api).unwrap();
        let doc = OpenApiJson::new(&api).unwrap();
        assert!(
            doc.gzip.len() * 5 < doc.len,
            "{} of {}",
            doc.gzip.len(),
            doc.len
        );
        let origin = PublicOrigin {
            scheme: "https",
            host: crate::forwarded::Host::new("chat.example.com").unwrap(),
            prefix: "/gw".to_owned(),
            client_ip: None,
        };
        let mut served: serde_json::Value =
            serde_json::from_slice(&doc.for_origin(&origin).unwrap()).unwrap();
        let servers = served.as_object_mut().unwrap().remove("servers").unwrap();
        assert_eq!(
            servers,
            serde_json::json!([{"url": "https://chat.example.com/gw"}])
        );
        assert_eq!(served, generated);

        api.servers = Some(vec![utoipa::openapi::Server::new("https://fixed.example")]);
        let doc = OpenApiJson::new(&api).unwrap();
        let served = doc.for_origin(&origin).unwrap();
        assert_eq!(served, serde_json::to_vec(&api).unwrap());
    }
}
