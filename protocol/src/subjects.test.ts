// Subject, bucket, key and database names are built only from ids that pass the allowlists; a bad id is a
// programmer error that could widen a subscription (`victim.>`), so each builder throws on it.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  cellDatabaseName,
  deliveriesSubject,
  directoryChangesSubject,
  directorySubject,
  leaseKey,
  membershipBucket,
  redisPrefix,
  revocationsSubject,
  typingSubject,
  workerRequestSubject,
  workerRequestSubjects,
  workerSubject,
} from "./subjects.ts";

const badNamespaces = ["", "Cellwire", "cell.wire", "cell-wire", "1cellwire", "_x", "a b", "a>", "a*", "x".repeat(25)];
const badCellIds = ["", "A", "a.b", "a-b", "a_b", "1a", "a>", "a*", "a b", "a".repeat(17)];
const badWorkerIds = ["", "-a", "A-1", "a.1", "a_1", "a 1", "a>", "a*", "a".repeat(49)];

describe("subject builders", () => {
  it("build the documented names from valid ids", () => {
    expect(workerSubject("cellwire", "a", "a-1")).toBe("cellwire.cell.a.worker.a-1");
    expect(deliveriesSubject("cellwire")).toBe("cellwire.deliveries");
    expect(directorySubject("t1")).toBe("t1.directory.request");
    expect(directoryChangesSubject("t1")).toBe("t1.directory.changed");
    expect(membershipBucket("cellwire", "b")).toBe("cellwire_members_b");
    expect(leaseKey("b-2")).toBe("worker.b-2");
    expect(redisPrefix("cellwire")).toBe("cellwire:");
    expect(cellDatabaseName("my_ns", "a7")).toBe("my_ns_cell_a7");
    expect(revocationsSubject("t1")).toBe("t1.sessions.revoke");
    expect(() => revocationsSubject("t.>")).toThrow(TypeError);
    expect(typingSubject("t1")).toBe("t1.typing");
  });

  it("give each worker a subject per channel under its base, which permissions tell apart (docs/decisions/0015)", () => {
    expect(workerRequestSubject("cellwire", "a", "a-1", "edge")).toBe("cellwire.cell.a.worker.a-1.edge");
    expect(workerRequestSubject("cellwire", "a", "a-1", "peer")).toBe("cellwire.cell.a.worker.a-1.peer");
    expect(workerRequestSubject("cellwire", "a", "a-1", "admin")).toBe("cellwire.cell.a.worker.a-1.admin");
    expect(workerRequestSubjects("t.cell.b.worker.b-2")).toEqual({
      edge: "t.cell.b.worker.b-2.edge",
      peer: "t.cell.b.worker.b-2.peer",
      admin: "t.cell.b.worker.b-2.admin",
    });
    for (const bad of ["", "t.cell.a.worker.*", "t.cell.a.worker.>", "t cell"]) expect(() => workerRequestSubjects(bad)).toThrow(TypeError);
    expect(() => workerRequestSubject("cellwire", "a", "victim.>", "admin")).toThrow(TypeError);
  });

  it("accept the longest valid ids", () => {
    const namespace = "n".repeat(24);
    expect(workerSubject(namespace, "c".repeat(16), "w".repeat(48))).toBe(`${namespace}.cell.${"c".repeat(16)}.worker.${"w".repeat(48)}`);
    expect(deliveriesSubject(namespace)).toBe(`${namespace}.deliveries`);
  });

  it.each(badNamespaces)("throw on the namespace %j", (namespace) => {
    expect(() => workerSubject(namespace, "a", "a-1")).toThrow(TypeError);
    expect(() => deliveriesSubject(namespace)).toThrow(TypeError);
    expect(() => directorySubject(namespace)).toThrow(TypeError);
    expect(() => directoryChangesSubject(namespace)).toThrow(TypeError);
    expect(() => membershipBucket(namespace, "a")).toThrow(TypeError);
    expect(() => redisPrefix(namespace)).toThrow(TypeError);
    expect(() => cellDatabaseName(namespace, "a")).toThrow(TypeError);
  });

  it.each(badCellIds)("throw on the cell id %j", (cellId) => {
    expect(() => workerSubject("cellwire", cellId, "a-1")).toThrow(TypeError);
    expect(() => membershipBucket("cellwire", cellId)).toThrow(TypeError);
    expect(() => cellDatabaseName("cellwire", cellId)).toThrow(TypeError);
  });

  it.each(badWorkerIds)("throw on the worker id %j", (workerId) => {
    expect(() => workerSubject("cellwire", "a", workerId)).toThrow(TypeError);
    expect(() => leaseKey(workerId)).toThrow(TypeError);
  });

  it("never build a worker subject from an id holding a subject separator, wildcard or whitespace", () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 30 }),
        fc.constantFrom(".", "*", ">", " ", "\t", "\n"),
        fc.string({ maxLength: 30 }),
        (before, dangerous, after) => {
          expect(() => workerSubject("cellwire", "a", `${before}${dangerous}${after}`)).toThrow(TypeError);
        },
      ),
    );
  });

  it("quote a shortened copy of the bad id in the error", () => {
    expect(() => workerSubject("cellwire", "a", "victim.>")).toThrow('invalid worker id for a subject: "victim.>"');
    const long = `${"x".repeat(100)}.`;
    expect(() => workerSubject("cellwire", "a", long)).toThrow(JSON.stringify("x".repeat(80)));
  });
});
