//! The doors: framing only. Each reads a request into the types of `crate::ops`, has
//! `ops` do the operation, and frames its answer or its [`Error`](crate::error::Error):
//!
//! - [`http`]: the REST API (axum), its routes built from the catalogue, problem+json
//!   errors ([`problem`]), the OpenAPI 3.1 document ([`openapi`]);
//! - [`mcp`]: MCP tools (rmcp), over stdio and streamable HTTP at `/mcp`;
//! - [`a2a`]: the signed A2A agent card and JSON-RPC at `/a2a`;
//! - [`workspace`]: web pages for people at `/`, signed in with an API token.

pub mod a2a;
pub mod http;
pub mod mcp;
pub mod openapi;
pub mod problem;
pub mod workspace;
