//! In-process DSM simulator (query.cgi / auth.cgi / entry.cgi).
