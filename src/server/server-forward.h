/* SPDX-License-Identifier: Apache-2.0 */
/* server-forward — forward declarations shared by konn-server's modules, so headers need not include each other. */
#pragma once

typedef struct Manager Manager;
typedef struct Backend Backend;
typedef struct Tunnel Tunnel;
typedef struct AgentLink AgentLink;
typedef struct ReverseStream ReverseStream;
typedef struct LeaseController LeaseController;
