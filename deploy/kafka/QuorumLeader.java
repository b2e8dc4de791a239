// Prints the node id of the active KRaft controller (the leader of the metadata quorum), as the
// Kafka Admin client sees it: `java -cp 'libs/*' QuorumLeader.java HOST:PORT[,HOST:PORT...]`.
// Run from source by the JDK (no build step); used by the fault tests and `tiny-saga chaos` to kill
// the active controller, which no Python client can ask for (DescribeQuorum).
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class QuorumLeader {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "20000");
        try (Admin admin = Admin.create(props)) {
            System.out.println("leader=" + admin.describeMetadataQuorum().quorumInfo().get().leaderId());
        }
    }
}
