import { MemoryConversationStore } from "./memory-store.ts";
import { registerStoreContract } from "./store-contract.ts";

const groupMembersMax = 8;
const store = new MemoryConversationStore({ groupMembersMax });

registerStoreContract("memory", () => store, { groupMembersMax, concurrentAppends: 200 });
