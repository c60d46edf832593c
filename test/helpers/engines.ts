/** The engines every end-to-end test runs on. Both are required: a missing addon fails the tests. */
export const ENGINES: ("native" | "js")[] = (process.env.TENSORMERGE_TEST_ENGINES?.split(",") as ("native" | "js")[] | undefined) ?? ["native", "js"];
