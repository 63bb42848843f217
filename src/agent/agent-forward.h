/* SPDX-License-Identifier: Apache-2.0 */
/* agent-forward — forward declarations shared by konn-agent's modules. */
#pragma once

typedef struct Manager Manager;
typedef struct ServerConn ServerConn;
typedef struct Endpoint Endpoint;
typedef struct ReverseConn ReverseConn;
typedef struct ReverseListener ReverseListener;
typedef struct LeaseCounter LeaseCounter;
