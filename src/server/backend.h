/* SPDX-License-Identifier: Apache-2.0 */
/*
 * backend — one agent's /AgentService/Connect stream on konn-server: its identity (agentid, identifiers), its
 * draining flag, and the tunnels riding on it (established ones by connectID, pending dials in a list). Owned by
 * the Manager (list); bound to a GrpcCall owned by the agent's H2Conn. Packets from this stream can only reach this
 * backend's own tunnels (protocol.md §15). Freeing a backend fails its pending dials and closes its tunnels.
 * Loop thread only.
 */
#pragma once

#include "auth.h"
#include "h2conn.h"
#include "idmap.h"
#include "macro.h"
#include "server-forward.h"

struct Backend {
        Manager *manager;
        LIST_FIELDS(Backend, backends);
        AgentLink *link;
        GrpcCall *call;
        char *agent_id;
        char *identifiers;
        char peer[128];
        char **hosts;          /* host/ipv4/ipv6 identifier values (destHost strategy) */
        bool default_route;    /* identifier default-route=true (defaultRoute strategy) */
        bool tunnel_streams;   /* konn-to-konn mode negotiated: each tunnel on its own stream */
        bool reverse;          /* node → control-plane streams negotiated (konn-features: reverse) */
        ReverseStream *rstreams;  /* node → control-plane connections on this agent's connection (reverse.c) */
        unsigned n_rstreams;
        bool superseded;       /* an older stream of the same agent exists: that one is used (§3.3) */
        bool draining;
        bool authenticating;   /* on Manager.authenticating while its TokenReview runs; the call is not accepted */
        bool wants_tunnel_streams, wants_reverse; /* konn-features asked for, kept while the token is reviewed */
        KubeRequest *review;   /* the TokenReview in flight */
        auth_done_t auth_done;
        char *token;           /* the Bearer token, only while reviewed */
        uint8_t token_hash[32];
        uint64_t since_usec;
        IdMap *tunnels;        /* connectID → Tunnel (established) */
        Tunnel *pending;       /* dials sent on this stream, waiting for DIAL_RSP */
        unsigned n_pending;
};

/* Server handler for a new call on an agent connection (the H2ConnHandler.on_call of the agent listener). */
int backend_on_call(Manager *m, AgentLink *link, GrpcCall *call, const char **ret_message);

Backend *backend_free(Backend *b, const char *reason);
/* Parse agentidentifiers (URL query form, §3.1) into hosts and default_route. */
int backend_parse_identifiers(const char *s, char ***ret_hosts, bool *ret_default_route);
/* Send a packet on the stream; on failure the stream is ended (the peer is stuck or gone) and -errno returned. */
int backend_send(Backend *b, const Packet *p);
