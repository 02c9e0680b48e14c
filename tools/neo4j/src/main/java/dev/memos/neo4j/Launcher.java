package dev.memos.neo4j;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.HttpConnector;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;

/**
 * Starts an embedded Neo4j Community server for tests: Bolt on 127.0.0.1:PORT, auth disabled,
 * data under DATA_DIR (deleted by the caller). Prints "NEO4J READY bolt://127.0.0.1:PORT" once
 * Bolt accepts connections and the default database is up; stops cleanly on SIGTERM.
 *
 * <p>Usage: {@code java -cp 'target/*:target/lib/*' dev.memos.neo4j.Launcher PORT DATA_DIR [WATCH_PID]}
 *
 * <p>The page cache is 64 MiB unless {@code -Dmemos.neo4j.pagecacheMb=N} says otherwise.
 *
 * <p>With WATCH_PID, the server also stops once that process has exited, so a test run that dies
 * without cleaning up does not leave a server behind.
 */
public final class Launcher {
  private Launcher() {}

  public static void main(String[] args) throws Exception {
    if (args.length < 2 || args.length > 3) {
      System.err.println("usage: Launcher PORT DATA_DIR [WATCH_PID]");
      System.exit(2);
    }
    int port = Integer.parseInt(args[0]);
    Path home = Path.of(args[1]).toAbsolutePath();
    Files.createDirectories(home);

    DatabaseManagementService dbms =
        new DatabaseManagementServiceBuilder(home)
            .setConfig(BoltConnector.enabled, true)
            .setConfig(BoltConnector.listen_address, new SocketAddress("127.0.0.1", port))
            .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
            .setConfig(HttpConnector.enabled, false)
            .setConfig(GraphDatabaseSettings.auth_enabled, false)
            // Test data is small; benchmarks raise it with -Dmemos.neo4j.pagecacheMb=N (NEO4J_JAVA_OPTS).
            .setConfig(
                GraphDatabaseSettings.pagecache_memory,
                Long.getLong("memos.neo4j.pagecacheMb", 64L) * 1024 * 1024)
            .setConfig(GraphDatabaseSettings.shutdown_transaction_end_timeout, Duration.ofSeconds(2))
            .build();
    Runtime.getRuntime().addShutdownHook(new Thread(dbms::shutdown, "neo4j-shutdown"));

    // Touch the default database so it is started before we say we are ready.
    dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME).executeTransactionally("RETURN 1");
    System.out.println("NEO4J READY bolt://127.0.0.1:" + port);
    System.out.flush();
    if (args.length == 3) {
      long watched = Long.parseLong(args[2]);
      while (ProcessHandle.of(watched).map(ProcessHandle::isAlive).orElse(false)) {
        Thread.sleep(1000);
      }
      System.out.println("NEO4J watched process " + watched + " is gone; stopping");
      System.exit(0);
    }
    Thread.currentThread().join();
  }
}
